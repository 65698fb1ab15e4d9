"""Imported once by the forkserver: every worker forked from it starts with the verifiers
(sympy, math-verify, the LaTeX parser) loaded and warmed up, so a replacement for a killed
worker costs milliseconds instead of a second of imports."""

from mm_gmpo.rewards._worker import warm_up

warm_up()
