"""``python -m bench`` (``make bench``): run every benchmark, write JSON and docs/performance.md."""
import json
import os
import platform
import sys
from pathlib import Path

from . import (autocast_score, backpressure, encoder_scale, encoder_step, learner_step, pipelined,
               realtime)

BENCHES = (learner_step, encoder_step, encoder_scale, backpressure, realtime, pipelined,
           autocast_score)


def main(argv=None) -> int:
    """Run every benchmark; with ``--render``, only rebuild docs/performance.md from the JSON of
    the last run (after a change to the wording, with no new timing)."""
    render = "--render" in (sys.argv[1:] if argv is None else argv)
    out_dir = Path("bench/results")
    out_dir.mkdir(parents=True, exist_ok=True)
    sections = []
    for bench in BENCHES:
        path = out_dir / f"{bench.__name__.split('.')[-1]}.json"
        if render:
            result = json.loads(path.read_text())
        else:
            result = bench.run()
            result["machine"] = {"platform": platform.platform(),
                                 "python": platform.python_version(),
                                 "processor": platform.processor() or platform.machine(),
                                 "cores": os.cpu_count()}
            path.write_text(json.dumps(result, indent=2))
        sections.append(bench.markdown(result))
        print(sections[-1])
    header = ("# Performance\n\nMade by `make bench` (`python -m bench`); JSON in bench/results/. Every "
              "figure is a ratio against a baseline timed in the same run, on the machine named in "
              "each section, so it holds across machines better than seconds do.\n\n")
    Path("docs/performance.md").write_text(header + "\n".join(sections))
    return 0


if __name__ == "__main__":
    sys.exit(main())
