"""Eight schools (Rubin 1981; Gelman et al., BDA3 sec. 5.5), non-centred: a model file for `variational fit`.

    variational fit examples/eight_schools_model.py --family fullrank
    variational fit examples/eight_schools_model.py --family meanfield --json --plot eight_schools.png

theta_j = mu + tau * theta_trans_j,  theta_trans_j ~ N(0, 1),  y_j ~ N(theta_j, sigma_j),
mu ~ N(0, 5),  tau ~ HalfCauchy(5).
"""

import torch
from torch.distributions import Cauchy, Normal, constraints

from variational import vi

# float64 data, so the log density is computed in double precision like the fit.
y = torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0], dtype=torch.float64)
sigma = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0], dtype=torch.float64)


def log_joint(p: dict[str, torch.Tensor]) -> torch.Tensor:
    theta = p["mu"] + p["tau"] * p["theta_trans"]
    return (
        Normal(0.0, 1.0).log_prob(p["theta_trans"]).sum()
        + Normal(theta, sigma).log_prob(y).sum()
        + Normal(0.0, 5.0).log_prob(p["mu"])
        + Cauchy(0.0, 5.0).log_prob(p["tau"])
        + torch.log(torch.tensor(2.0))  # half-Cauchy on tau > 0
    )


model = vi.Model(
    log_joint,
    {"theta_trans": (constraints.real, (8,)), "mu": constraints.real, "tau": constraints.positive},
    name="eight_schools_noncentered",
)
