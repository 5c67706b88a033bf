"""`python -m scanctl.demo`: run the simulated upstream."""

from scanctl.demo.server import main

raise SystemExit(main())
