"""`cortexreplay synth`: write a synthetic recording with a known ground truth."""
from dataclasses import fields

from ..cortex import CortexSettings, synthesize

OPTIONS = ("seed", "sounds", "duration", "subjects", "voxels", "repeats", "plasticity", "retention",
           "snr", "teacher_steps", "read_layer")


def add_parser(sub):
    p = sub.add_parser("synth", help="write a synthetic recording (teacher network + hemodynamics + noise)")
    p.add_argument("--out", required=True, help="recording store to create (.zarr)")
    p.add_argument("--checkpoint", required=True, help="pretrained checkpoint the teacher starts from")
    d = CortexSettings()
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--sounds", type=int, default=d.sounds, help=f"number of sounds (default {d.sounds})")
    p.add_argument("--duration", type=float, default=d.duration_s, help="sound duration in s")
    p.add_argument("--subjects", type=int, default=d.subjects)
    p.add_argument("--voxels", type=int, default=d.voxels)
    p.add_argument("--repeats", type=int, default=d.repeats, help="presentations of each sound")
    p.add_argument("--plasticity", type=float, default=d.plasticity,
                   help="teacher learning rate; 0 makes a static cortex")
    p.add_argument("--retention", type=float, default=d.retention,
                   help="teacher relaxation toward its start after each sound (1: none)")
    p.add_argument("--snr", type=float, default=d.snr, help="signal/noise variance ratio per voxel")
    p.add_argument("--teacher-steps", type=int, default=d.teacher_steps)
    p.add_argument("--read-layer", default=d.read_layer)
    p.add_argument("--force", action="store_true", help="replace an existing store")
    p.set_defaults(func=main)


def main(args):
    for name in ("sounds", "subjects", "voxels", "repeats", "teacher_steps"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.duration <= 0 or args.snr <= 0 or args.plasticity < 0 or not 0 <= args.retention <= 1:
        raise ValueError("need --duration > 0, --snr > 0, --plasticity >= 0 and 0 <= --retention <= 1")
    names = {f.name for f in fields(CortexSettings)}
    settings = CortexSettings(**{("duration_s" if k == "duration" else k): getattr(args, k)
                                 for k in OPTIONS if ("duration_s" if k == "duration" else k) in names})
    out = synthesize(args.out, args.checkpoint, settings, overwrite=args.force)
    print(f"synth: wrote {out}")
