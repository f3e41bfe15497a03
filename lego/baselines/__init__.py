"""Trained baselines: one module each, registered in :mod:`lego.models.model_kinds`.

A trained baseline is a :class:`~lego.models.model_kinds.ModelKind` with ``role="baseline"`` and a
``fit`` function ``fit(inputs, spec, device, where) -> (module, config, history)``:

* ``inputs``: :class:`~lego.data.fold_data.FoldInputs` -- the fold's targets and every modality the
  model reads, preprocessed on the fold's training patients (a modality-scope model gets one);
* ``spec``: its training settings (``model.train`` with the modality's block overrides, ``n_bins``);
* the returned module takes the input dict ``{modality: (x, mask, present)}`` and returns
  ``(hidden, logits)``; ``config`` holds what its kind's ``build`` needs to rebuild it.

The workflow then trains it per fold (``lego train-model``), evaluates it like every model
(``lego evaluate``), applies it to new cohorts (``lego predict``) and, with ``heatmaps=True``, draws
its patch attention. Nothing else needs to change to add one.
"""
