"""CLI commands, one module each; imported by ``core.cli`` on start. Keep module-level
imports light (import heavy libraries inside ``run``) so ``--help`` stays fast."""
