"""The seed articles: newsloom's default input and the stream ``newsloom replay`` publishes.

A package only so that the ``.txt`` files install with newsloom (see setup.py).
"""
