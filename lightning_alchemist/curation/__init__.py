"""Curation stages beyond one score: caption variants (:mod:`.captions`) and the wider curation plan.

Submodules are imported on use (``from lightning_alchemist.curation.captions import ...``), so this
package stays cheap to import and each stage keeps its own module.
"""
