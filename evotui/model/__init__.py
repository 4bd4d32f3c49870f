"""torch modules built from a genome spec (see evotui.model.lm.build_model)."""
