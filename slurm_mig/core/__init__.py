"""The pure core: catalog, syntax, view, planner, policies, layouts. No files
(but the packaged catalog data), no NVML, no subprocess."""
