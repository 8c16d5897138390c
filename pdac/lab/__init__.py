"""The lab, not the product: synthetic phantoms, the demo-weights and study workflows, and benchmarks.

Nothing under pdac.infer imports from here."""
