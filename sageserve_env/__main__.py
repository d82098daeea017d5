"""``python -m sageserve_env``: see ``sageserve_env.cli``."""

import sys

from sageserve_env.cli import main

sys.exit(main())
