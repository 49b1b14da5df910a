"""The LR range test study on LeNet5/MNIST with ColossalAI; installed as `fused_optim.experiments`.

Run it with ``python experiments/range_test.py`` (see ``--help``).
"""
