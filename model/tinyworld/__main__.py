"""``python -m unigen.model.tinyworld --data DIR [--out DIR] [--parts ...]``: build the tiny world's
pretrained parts (see the package docstring) and print what they score."""
from __future__ import annotations

import sys

from unigen.model.tinyworld.build import main

if __name__ == "__main__":
    sys.exit(main())
