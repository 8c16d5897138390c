from pdac.cli import main

raise SystemExit(main())
