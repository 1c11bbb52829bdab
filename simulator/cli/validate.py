"""`cortexreplay validate`: planted-effect recovery on synthetic cortices, claim by claim."""
from ..validation import PLANS, format_claims, run_validation


def add_parser(sub):
    p = sub.add_parser("validate", help="check that planted effects are found, and only where "
                                        "planted (docs/validation.md)")
    p.add_argument("--out", default="validation",
                   help="folder for recordings, results and the report (reused by a second call)")
    p.add_argument("--plan", default="full", choices=sorted(PLANS),
                   help="full: the claims as stated (about an hour on 2 cores); quick: a smoke test")
    p.add_argument("--checkpoint", default=None,
                   help="pretrained checkpoint (default: pretrain one under --out)")
    p.add_argument("--jobs", type=int, default=None, help="processes in parallel (default: cores)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=main)


def main(args):
    claims = run_validation(args.out, PLANS[args.plan], checkpoint=args.checkpoint, jobs=args.jobs,
                            progress_bar=not args.no_progress)
    print(format_claims(claims))
    print(f"validate: report in {args.out}/validation.txt and validation.json")
    return 1 if any(c.status == "fail" for c in claims) else 0
