"""``python -m tollgate_demo``: the closed-loop scenario (``make demo``)."""

from tollgate_demo.demo import main

main()
