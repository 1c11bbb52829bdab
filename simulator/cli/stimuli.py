"""`cortexreplay stimuli FOLDER --out STORE`: the sounds of an experiment as a recording store.

A live run needs the sounds its acquisition's events name (by index); this writes them, in sorted
file order, and prints the index of each so the acquisition can send it.
"""
import csv
import sys

from replay.audio_folder import read_audio_folder
from replay.store import RecordingWriter


def add_parser(sub):
    p = sub.add_parser("stimuli", help="store a folder of sound files as the stimuli of live runs")
    p.add_argument("folder", help="sound files (a subfolder's name is its files' category)")
    p.add_argument("--out", required=True, help="recording store to write")
    p.add_argument("--sample-rate", type=int, default=None,
                   help="rate to store the sounds at (default: the first file's)")
    p.add_argument("--modality", choices=("fus", "fmri"), default="fus")
    p.add_argument("--force", action="store_true", help="replace an existing store")
    p.set_defaults(func=main)


MIN_SECONDS = 0.025  # wav2vec 2.0's first convolution takes 400 samples at 16 kHz


def main(args):
    if args.sample_rate is not None and args.sample_rate < 1:
        raise ValueError(f"--sample-rate must be a positive number of Hz, got {args.sample_rate}")
    waves, rate, names, categories = read_audio_folder(args.folder, args.sample_rate)
    short = [name for name, wave in zip(names, waves) if len(wave) < MIN_SECONDS * rate]
    if short:
        raise ValueError(f"{len(short)} sound(s) shorter than {MIN_SECONDS * 1000:g} ms, too short "
                         f"for the network (first: {short[0]!r}); remove or lengthen them")
    with RecordingWriter(args.out, modality=args.modality, overwrite=args.force) as writer:
        writer.write_stimuli(waves, sample_rate=rate, names=names, categories=categories)
    table = csv.writer(sys.stdout, lineterminator="\n")
    table.writerow(["stimulus", "name", "category", "seconds"])
    for i, (name, category, wave) in enumerate(zip(names, categories, waves)):
        table.writerow([i, name, category, f"{len(wave) / rate:.3f}"])
    print(f"stimuli: {len(waves)} sound(s) at {rate} Hz written to {args.out}", file=sys.stderr)
