"""The frame browser of the HTML report (:mod:`analyze.browse.frames`): it reads caches and maps
(:mod:`analyze.maps.write`), which themselves use the report's names, so it sits beside
:mod:`analyze.report` and is handed to it (``write_report(frame_browser=...)``), not imported by it.
"""
