"""The Textual app over a run store: Population, Loss, GPU and Log panes, keys that pause,
resume and kill candidates. ``feed`` (incremental store reads), ``cells`` and ``sampler`` import
no Textual; nothing here imports torch."""
