"""The fault harness: delivery scenarios played against the real servers with the bridge as its
own process, killed, starved and disconnected on a seeded schedule.

Every message carries a unique token; a scenario's outcome counts, per token, what reached the
other side (Matrix room, correspondent's mailbox, Sent folder) and in which order. The same
scenarios run small in the test suite (tests/test_faults.py) and large in the soak command
(`python -m bench.soak`).
"""
