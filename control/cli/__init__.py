"""The CLI edge: what ``tasks.py`` uses to fail in one line and to print results.

``edge`` turns errors into exit codes, ``formats`` and ``tables`` render numbers and
results, ``live`` is the monitor's live view and ``render`` prints each command's
result. Only this package and ``tasks.py`` print; the rest of ``control/`` logs.
"""
