"""`cortexreplay synth`: write a synthetic recording with a known ground truth."""
from dataclasses import replace

from ..cortex import FMRI_TR_S, MODALITIES, CortexSettings, synthesize

# Options named as the settings they set (duration and tr are converted).
OPTIONS = ("seed", "sounds", "subjects", "voxels", "repeats", "plasticity", "retention", "snr",
           "teacher_steps", "read_layer")


def add_parser(sub):
    p = sub.add_parser("synth", help="write a synthetic recording (teacher network + hemodynamics + noise)")
    p.add_argument("--out", required=True, help="recording store to create (.zarr)")
    p.add_argument("--checkpoint", required=True, help="pretrained checkpoint the teacher starts from")
    d, f = CortexSettings(), CortexSettings.fmri()
    p.add_argument("--modality", choices=MODALITIES, default=d.modality,
                   help="fus (default): 1 frame/s, a gamma kernel, one session; fmri: parcels at "
                        f"a TR of {FMRI_TR_S} s through the Glover HRF, {f.sessions} sessions of "
                        f"their own sounds, {f.pre_s:g} s of silence before and {f.post_s:g} s "
                        "after each sound")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--sounds", type=int, default=d.sounds, help=f"number of sounds (default {d.sounds})")
    p.add_argument("--duration", type=float, default=d.duration_s, help="sound duration in s")
    p.add_argument("--subjects", type=int, default=d.subjects)
    p.add_argument("--voxels", type=int, default=d.voxels,
                   help=f"number of voxels, or of parcels with --modality fmri (default {d.voxels})")
    p.add_argument("--repeats", type=int, default=d.repeats,
                   help="presentations of each sound (within its session)")
    p.add_argument("--sessions", type=int, default=None,
                   help=f"sessions per subject, each with its own sounds (default {d.sessions}; "
                        f"{f.sessions} with --modality fmri)")
    p.add_argument("--tr", type=float, default=None,
                   help=f"seconds per brain frame (default {1 / d.frame_rate_hz:g}; {FMRI_TR_S} "
                        "with --modality fmri)")
    p.add_argument("--plasticity", type=float, default=d.plasticity,
                   help="teacher learning rate; 0 makes a static cortex")
    p.add_argument("--retention", type=float, default=d.retention,
                   help="teacher relaxation toward its start after each sound (1: none)")
    p.add_argument("--snr", type=float, default=d.snr, help="signal/noise variance ratio per voxel")
    p.add_argument("--teacher-steps", type=int, default=d.teacher_steps)
    p.add_argument("--read-layer", default=d.read_layer)
    p.add_argument("--force", action="store_true", help="replace an existing store")
    p.set_defaults(func=main)


def settings_from(args) -> CortexSettings:
    """The settings the options ask for: the modality's design, then every option given."""
    for name in ("sounds", "subjects", "voxels", "repeats", "teacher_steps"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.duration <= 0 or args.snr <= 0 or args.plasticity < 0 or not 0 <= args.retention <= 1:
        raise ValueError("need --duration > 0, --snr > 0, --plasticity >= 0 and 0 <= --retention <= 1")
    if args.tr is not None and not args.tr > 0:
        raise ValueError(f"--tr must be > 0 (seconds per frame), got {args.tr}")
    if args.sessions is not None and not 1 <= args.sessions <= args.sounds:
        raise ValueError(f"--sessions must be from 1 to --sounds ({args.sounds}), so that each "
                         f"session hears its own sounds, got {args.sessions}")
    base = CortexSettings.fmri() if args.modality == "fmri" else CortexSettings()
    given = {k: getattr(args, k) for k in OPTIONS}
    given["duration_s"] = args.duration
    if args.sessions is not None:
        given["sessions"] = args.sessions
    if args.tr is not None:
        given["frame_rate_hz"] = 1.0 / args.tr
    return replace(base, **given)


def main(args):
    out = synthesize(args.out, args.checkpoint, settings_from(args), overwrite=args.force)
    print(f"synth: wrote {out}")
