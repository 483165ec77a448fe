from ovi_core.cli import main

raise SystemExit(main())
