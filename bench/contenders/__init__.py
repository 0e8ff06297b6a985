"""The processes the benchmark starts, one file per contender and measurement.

The ``*_cold.py`` files are run as scripts (not with ``-m``) so that nothing but what they import
themselves is loaded; each prints one line of JSON as its last line of output.
"""
