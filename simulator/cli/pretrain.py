"""`cortexreplay pretrain`: make (or reuse) the pretrained checkpoint learners start from."""
from ..model import SIZES
from ..pretrain import PretrainSettings, pretrain


def add_parser(sub):
    p = sub.add_parser("pretrain", help="self-supervised pretraining on a synthetic or real corpus")
    d = PretrainSettings()
    p.add_argument("--out", required=True, help="checkpoint directory")
    p.add_argument("--size", default=d.size, choices=sorted(SIZES))
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--corpus", default=None, help="folder of audio files (default: synthetic sounds)")
    p.add_argument("--clip", type=float, default=d.clip_s, help="training clip length in s")
    p.set_defaults(func=main)


def main(args):
    if args.steps < 1 or args.lr <= 0 or args.clip <= 0:
        raise ValueError("need --steps >= 1, --lr > 0 and --clip > 0")
    settings = PretrainSettings(size=args.size, steps=args.steps, lr=args.lr, seed=args.seed,
                                corpus=args.corpus, clip_s=args.clip)
    print(f"pretrain: checkpoint in {pretrain(args.out, settings)}")
