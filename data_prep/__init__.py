"""Command-line converters from published image and math datasets into the record parquet format.

Run ``python -m data_prep --help``; see ``data_prep/README.md`` for the commands and the counts
on the shipped data.
"""
