"""An evaluate() result as the short table `genlab eval` prints."""

from __future__ import annotations

from typing import Any


def format_table(result: dict[str, Any]) -> str:
    """A short human-readable table of an evaluate() result."""
    rows = [("run step", result["run_step"]), ("samples n", result["n"]), ("reference", result["reference"])]
    if result.get("temperature", 1.0) != 1.0:  # the samples are not the model's own distribution: say so
        rows.append(("temperature", f"{result['temperature']:g} (z drawn at T times the prior's scale)"))
    q = result.get("sample_quality", {})
    if "fd" in q:
        rows += [
            ("FD (classifier features)", f"{q['fd']:.3f}"),
            (f"precision / recall (k={q['pr_k']})", f"{q['precision']:.3f} / {q['recall']:.3f}"),
            (f"density / coverage (k={q['dc_k']})", f"{q['density']:.3f} / {q['coverage']:.3f}"),
            ("classifier score (IS-style)", f"{q['is_mean']:.3f} ± {q['is_std']:.3f}  (test set: {q['is_reference']:.3f})"),
            ("class histogram", " ".join(f"{h:.2f}" for h in q["class_hist"])),
            ("features", f"{q['features']['network']} sha256 {q['features']['sha256'][:12]}"),
        ]
        if q.get("collapse_warning"):
            rows.append(("WARNING", q["collapse_warning"]))
    elif q:
        rows.append(("sample quality", q["skipped"]))
    if "conditional_accuracy" in q:
        rows.append(("conditional accuracy", f"{q['conditional_accuracy']:.3f} (samples the classifier puts in the asked class)"))
    if "swap_accuracy" in q:
        rows.append(("label swap accuracy", f"{q['swap_accuracy']:.3f} (test codes decoded with another class, put in it)"))
    if "recon_accuracy" in q:
        rows.append(("reconstruction accuracy", f"{q['recon_accuracy']:.3f} (test codes decoded with their own class)"))
    if "skipped" in result.get("likelihood", {}):
        rows.append(("likelihood", result["likelihood"]["skipped"]))
    elif "likelihood" in result:
        lk = result["likelihood"]
        rows += [
            ("likelihood", lk["likelihood"]),
            (f"-ELBO (n={lk['n']})", f"{lk['neg_elbo']:.2f} ± {lk['neg_elbo_sem']:.2f} nats"),
            (f"-log p(x), IW k={lk['k']}", f"{lk['nll_iw']:.2f} ± {lk['nll_iw_sem']:.2f} nats"),
            ("KL / recon MSE", f"{lk['kl']:.2f} nats / {lk['recon_mse']:.5f}"),
        ]
    if "disentanglement" in result:
        dis = result["disentanglement"]
        kl = dis["kl_per_dim"]
        rows += [
            ("total correlation (Gaussian)", f"{dis['total_correlation']:.3f} nats"),
            ("active units", f"{dis['active_units']} of {len(kl)} (KL > 0.01: {dis['active_units_kl']})"),
            ("KL per dimension", " ".join(f"{v:.2f}" for v in sorted(kl, reverse=True))),
        ]
        if "mig" in dis:
            d, carry = dis["dci"], dis.get("latent_factors", [])
            rows.append((f"MIG / SAP ({dis['representation']})", f"{dis['mig']:.3f} / {dis['sap']:.3f}"))
            if "mig_chen" in dis:
                rows.append(("MIG, Chen et al. (4 factors, sampled z)", f"{dis['mig_chen']:.3f}"))
            if carry:  # the dimensions that carry a factor; a 128-d code lists only those
                some = [f"z{r['dim']} {r['label'].removeprefix('carries ')}" for r in carry if r["label"] != "none"]
                rows.append(("dimensions carry", ", ".join([*some, f"{len(carry) - len(some)} others none"])))
            rows += [
                ("DCI D / C / I", f"{d['disentanglement']:.3f} / {d['completeness']:.3f} / {d['informativeness']:.3f}"),
                ("beta-VAE / FactorVAE score", f"{dis['beta_vae_score']:.3f} / {dis['factor_vae_score']:.3f}"),
                ("factor metrics seconds", dis["seconds"]["total"]),
            ]
        else:
            rows.append(("factor metrics", dis["factor_metrics"]))
    if "gan_health" in result:
        g = result["gan_health"]
        if "w_estimate" in g:
            rows.append(("critic: Wasserstein estimate", f"{g['w_estimate']:.4g}"))
        else:
            rows.append(("D(x) / D(G(z)) / D acc", f"{g['d_real']:.3f} / {g['d_fake']:.3f} / {g['d_acc']:.3f}"))
    if "inception_fid" in result:
        rows.append(("Inception FID", result["inception_fid"]))
    rows.append(("seconds", result["seconds"]))
    width = max(len(str(k)) for k, _ in rows)
    return "\n".join(f"{str(k):<{width}}  {v}" for k, v in rows)
