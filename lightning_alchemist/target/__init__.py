"""The target model: its LightningModule (:class:`T2IModule`), trainer set-up and the ``train`` stage.

The target is the model a team trains on the selected data; the proxy (:mod:`lightning_alchemist.proxy`)
is the small model the rater learns from. Both are built from the same proxy families.
"""
