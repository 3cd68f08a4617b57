"""Plotly figure builders: pure functions from tables to figures, one shared style.

``style`` holds the colour sequence and layout defaults every page's figures use;
``explore`` builds the Explore page's figures.
"""
