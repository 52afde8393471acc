"""Replay of a recorded click log through the service's `POST /` endpoint.

`talkingdata` reads the log and maps its rows to clicks, `sender` posts the
clicks from a pool of threads, and `summary` counts the outcomes. The command
line lives in `replay.py` at the top of the repository.
"""
