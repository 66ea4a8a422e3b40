"""Validation report: a versioned JSON results document (results.py) rendered to one self-contained HTML page.

The JSON is the contract: ``validate.py`` assembles it from model outputs, ``html.py`` renders it, and every
number shown in the HTML carries a ``data-json`` attribute naming its path in the JSON so tests can compare them.
"""
