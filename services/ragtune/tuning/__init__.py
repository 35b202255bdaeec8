"""LoRA training (`ragtune tune`) and the tiny dev model (`ragtune devmodel`).

Never on the serving path: no service imports this package; the CLI, the tests and the
benchmarks do.
"""
