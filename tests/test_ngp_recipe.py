"""ngp's optimiser recipe: Instant-NGP's Adam betas by default, and a run saved with other betas
keeps its own on resume (the optimiser state carries them)."""

import torch

from fieldforge.apps.training.methods import get_method
from fieldforge.apps.training.run import default_scene_path
from fieldforge.scenes import load


def test_ngp_beta2_default_and_kept_from_a_checkpoint():
    train = load(default_scene_path()).split("train")
    cls = get_method("ngp")
    method = cls(cls.Config(), train, torch.device("cpu"))
    assert method.optimizer.param_groups[0]["betas"] == (0.9, 0.99)
    state = method.state_dict()
    for group in state["optimizer"]["param_groups"]:
        group["betas"] = (0.9, 0.999)  # as saved by a run before the default changed
    resumed = cls(cls.Config(), train, torch.device("cpu"))
    resumed.load_state_dict(state)
    assert all(g["betas"] == (0.9, 0.999) for g in resumed.optimizer.param_groups)
