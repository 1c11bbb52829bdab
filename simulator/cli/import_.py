"""`cortexreplay import fus|bids|generic ... --out STORE`: other layouts as a recording store.

Each format is one importer of `replay.importers`; their docstrings say what each expects. The
store is written as ``STORE.partial`` and renamed once complete and valid, so a failed import
leaves nothing that looks like a store; an existing store is replaced only with ``--force``.
"""
import sys

from replay.importers import FusLayout, import_bids, import_fus, import_generic


def add_parser(sub):
    p = sub.add_parser("import", help="import a recording (fUS Landemard layout, BIDS fMRI, numpy arrays)")
    formats = p.add_subparsers(dest="format", required=True, metavar="FORMAT")
    _fus(formats.add_parser("fus", help="ferret fUS in the Landemard et al. 2021 layout (per-slice .mat files)"))
    _bids(formats.add_parser("bids", help="fMRI in BIDS (NIfTI runs, events.tsv, sidecar JSON)"))
    _generic(formats.add_parser("generic", help="numpy arrays (frames x voxels) and events CSVs"))


def _common(p):
    p.add_argument("--out", required=True, help="recording store to write (.zarr)")
    p.add_argument("--sample-rate", type=int, default=None, help="rate to store the sounds at (default: the first's)")
    p.add_argument("--force", action="store_true", help="replace an existing store")


def _fus(p):
    p.add_argument("data", help="folder of <H>_<k>.mat slices and <H>_Anat&Param.mat files")
    p.add_argument("--sounds", required=True, help="folder of the sound files")
    p.add_argument("--order", default=None,
                   help="presentation-order CSV, one row per presentation in the order heard: stimulus, "
                        "repetition (1-based indices into the data), optional onset_s and sound")
    p.add_argument("--hemispheres", nargs="+", default=None, metavar="H", help="default: every one found")
    p.add_argument("--slices", nargs="+", type=int, default=None, metavar="K", help="default: every one")
    p.add_argument("--subject", default=None, help="subject name (default: the hemispheres, joined by '-')")
    p.add_argument("--frame-rate", type=float, default=1.0, help="frames per second (default 1)")
    p.add_argument("--pre-silence", type=float, default=None,
                   help="seconds of silence before each sound (default: the params' PreStimSilence frames)")
    p.add_argument("--sound-duration", type=float, default=None, help="seconds (default: each sound's length)")
    p.add_argument("--voxel-size", type=float, nargs=3, default=(1.0, 1.0, 1.0), metavar=("DX", "DY", "DZ"),
                   help="pixel rows, columns and slices to coordinates (default 1 1 1: indices)")
    d = FusLayout()
    for key in ("data_var", "param_suffix", "param_var", "mask_field", "pre_silence_field", "names_field"):
        p.add_argument(f"--{key.replace('_', '-')}", default=getattr(d, key), help=f"default {getattr(d, key)!r}"
                       .replace("%", "%%"))
    _common(p)
    p.set_defaults(func=_run_fus)


def _bids(p):
    p.add_argument("root", help="BIDS dataset folder (with stimuli/)")
    p.add_argument("--subjects", nargs="+", default=None, metavar="S", help="labels (default: all)")
    p.add_argument("--tasks", nargs="+", default=None, metavar="T", help="labels (default: all)")
    voxels = p.add_mutually_exclusive_group()
    voxels.add_argument("--mask", default=None, help="NIfTI mask on the BOLD grid ({subject}: one per subject)")
    voxels.add_argument("--atlas", default=None, help="NIfTI label atlas on the BOLD grid: one target per parcel")
    p.add_argument("--atlas-labels", default=None, help="TSV with index and name columns (e.g. a dseg.tsv)")
    _common(p)
    p.set_defaults(func=_run_bids)


def _generic(p):
    p.add_argument("--sounds", required=True, help="folder of the sound files")
    p.add_argument("--responses", nargs="+", required=True, metavar="NPY", help="frames x voxels, one per session")
    p.add_argument("--events", nargs="+", required=True, metavar="CSV",
                   help="one per session, same order: onset_s, stimulus, optional duration_s, repeat")
    p.add_argument("--frame-rate", type=float, required=True, help="frames per second")
    p.add_argument("--modality", choices=("fus", "fmri"), required=True)
    p.add_argument("--subject", default="sub-01")
    p.add_argument("--coords", default=None, help=".npy of (n_voxels, 3) coordinates")
    p.add_argument("--regions", default=None, help="text file, one region label a line")
    _common(p)
    p.set_defaults(func=_run_generic)


def _report(kind, summary):
    print(f"import {kind}: wrote {summary}")
    for note in summary.notes:
        print(f"import {kind}: note: {note}", file=sys.stderr)


def _run_fus(args):
    layout = FusLayout(**{k: getattr(args, k) for k in (
        "data_var", "param_suffix", "param_var", "mask_field", "pre_silence_field", "names_field")})
    _report("fus", import_fus(
        args.out, args.data, args.sounds, args.order, hemispheres=args.hemispheres, slices=args.slices,
        subject=args.subject, frame_rate_hz=args.frame_rate, pre_silence_s=args.pre_silence,
        sound_duration_s=args.sound_duration, voxel_size=tuple(args.voxel_size),
        sample_rate=args.sample_rate, layout=layout, force=args.force))


def _run_bids(args):
    _report("bids", import_bids(args.out, args.root, subjects=args.subjects, tasks=args.tasks, mask=args.mask,
                                atlas=args.atlas, atlas_labels=args.atlas_labels,
                                sample_rate=args.sample_rate, force=args.force))


def _run_generic(args):
    _report("generic", import_generic(args.out, args.sounds, args.responses, args.events,
                                      frame_rate_hz=args.frame_rate, modality=args.modality,
                                      subject=args.subject, coords=args.coords, regions=args.regions,
                                      sample_rate=args.sample_rate, force=args.force))
