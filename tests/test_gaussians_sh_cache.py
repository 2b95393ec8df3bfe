"""``GaussianModel.sh()``: the no-grad concatenation is reused only while its parts are unchanged."""

import torch

from fieldforge.fields.gaussians import GaussianModel


def test_sh_without_grad_follows_every_change_of_its_parts():
    model = GaussianModel(5, sh_degree=2)
    torch.nn.init.normal_(model.sh0)
    with torch.no_grad():
        first = model.sh()
        assert model.sh() is first  # unchanged: reused
        assert torch.equal(first, torch.cat([model.sh0, model.shN], 1))
        model.shN.add_(1.0)  # in place (an optimizer step)
        second = model.sh()
        assert second is not first and torch.equal(second[:, 1:], model.shN)
        model.set_params({k: v.detach()[:3] for k, v in model.params().items()})  # new parameters (densification)
        assert model.sh().shape == (3, 9, 3) and torch.equal(model.sh()[:, :1], model.sh0)
    grad = model.sh()  # with autograd: a fresh graph tensor every time
    assert grad.requires_grad and grad is not model.sh()
