# 90: your own additions (kept empty in the repository).
