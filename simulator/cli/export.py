"""`cortexreplay export`: the per-run and per-trial tables of a results store, as CSV or Parquet."""


def add_parser(sub):
    p = sub.add_parser("export", help="write the per-run and per-trial tables (CSV or Parquet)")
    p.add_argument("results")
    # Checked by the library, not argparse's choices, so a bad format is one line like the rest.
    p.add_argument("--format", dest="fmt", default="csv", metavar="csv|parquet",
                   help="table format (default csv; parquet needs pyarrow)")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="directory of runs.<ext> and trials.<ext> (default: <results stem>-export/ "
                        "next to the store)")
    p.add_argument("--force", action="store_true", help="overwrite existing export files")
    p.set_defaults(func=main)


def main(args):
    from ..export import export  # pandas and xarray load only for this command

    for path, n_rows in export(args.results, args.fmt, args.out, args.force):
        print(f"export: wrote {path} ({n_rows} rows)")
