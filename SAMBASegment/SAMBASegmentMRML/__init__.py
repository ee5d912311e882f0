"""The Qt-free half of the SAMBASegment module: MRML ↔ engine logic, dependency checks and the self-test body.

It lives in a package, not beside SAMBASegment.py, because Slicer tries to load every top-level ``.py`` file of a
scripted-module folder as a module of its own. Without Qt it also runs on ``slicer-core``, where pytest tests it.
"""
