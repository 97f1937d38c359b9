from __future__ import annotations

import sys

from karmchari_cli.main import main

sys.exit(main())
