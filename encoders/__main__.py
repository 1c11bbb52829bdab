"""``python -m encoders --bind ENDPOINT``: the encoder service (what ``cortexreplay encoder serve`` runs)."""
import sys

from .service import main

sys.exit(main())
