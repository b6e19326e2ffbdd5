"""``python -m pyro_lvm.cli`` is ``pyro-lvm``."""

import sys

from pyro_lvm.cli import main

sys.exit(main())
