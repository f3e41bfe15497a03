# Evaluation: every model (LegoBlocks, LegoMerge, LegoFuse, baselines, the late-fusion ensemble)
# ends as eval/<model>/fold<k>/{predictions.parquet,metrics.json}; the summary tables, figures
# and the Snakemake report are built from those files alone.


rule evaluate:
    # One job scores every fold of a model: a job's start (torch and scikit-survival) costs more
    # than scoring a fold, and each fold's files stay separate for the rules that read them.
    input:
        model_files=lambda w: every_fold_model_files(w.model),
        data=lambda w: [PLAN.data_path(m) for m in PLAN.model_modalities(w.model)],
        labels=rules.ingest_labels.output[0],
        folds=rules.make_folds.output[0],
    output:
        metrics=[PLAN.evaluation("{model}", k)["metrics"] for k in PLAN.folds],
        predictions=[PLAN.evaluation("{model}", k)["predictions"] for k in PLAN.folds],
    log:
        f"{OUT}/logs/evaluate/{{model}}.log",
    benchmark:
        f"{OUT}/benchmarks/evaluate/{{model}}.tsv"
    conda:
        "../envs/models.yaml"
    threads: TRAIN_RUN["threads"]
    resources:
        mem_mb=grows(4000),
        runtime=grows(10 * len(PLAN.folds)),  # minutes: 10 per fold scored, more on a retry
    params:
        model_dirs=lambda w, input: folders(input.model_files),
        data=lambda w, input: named_paths(PLAN.model_modalities(w.model), input.data),
        evaluation=PLAN.metric_options,
        out_dirs=lambda w, output: quoted(os.path.dirname(p) for p in output.metrics),
    shell:
        "lego evaluate --model-dir {params.model_dirs} --name {wildcards.model} --data {params.data} "
        "--labels {input.labels:q} --folds {input.folds:q} --evaluation {params.evaluation:q} --threads {threads} "
        "--out-dir {params.out_dirs} > {log:q} 2>&1"


rule baselines:
    input:
        data=lambda w: [PLAN.data_path(m) for m in PLAN.baseline_modalities(w.source)],
        labels=rules.ingest_labels.output[0],
        folds=rules.make_folds.output[0],
    output:
        metrics=[PLAN.evaluation(baseline_name(m, "{source}"), "{fold}")["metrics"] for m in PLAN.classical],
        predictions=[PLAN.evaluation(baseline_name(m, "{source}"), "{fold}")["predictions"] for m in PLAN.classical],
    log:
        f"{OUT}/logs/baselines/{{source}}/fold{{fold}}.log",
    benchmark:
        f"{OUT}/benchmarks/baselines/{{source}}/fold{{fold}}.tsv"
    conda:
        "../envs/models.yaml"
    resources:
        mem_mb=grows(8000),
        runtime=60,
    params:
        methods=" ".join(PLAN.classical),
        data=lambda w, input: named_paths(PLAN.baseline_modalities(w.source), input.data),
        modalities=lambda w: json.dumps(PLAN.modality_specs(PLAN.baseline_modalities(w.source)), sort_keys=True),
        task=config["cohort"]["task"],
        n_bins=config["model"]["n_bins"],
        seed=config["evaluation"]["seed"],
        evaluation=PLAN.metric_options,
        out_root=lambda w, output: os.path.dirname(os.path.dirname(os.path.dirname(output.metrics[0]))),
    shell:
        "lego baselines --methods {params.methods} --source {wildcards.source} --data {params.data} "
        "--modalities {params.modalities:q} --labels {input.labels:q} --folds {input.folds:q} --fold {wildcards.fold} "
        "--task {params.task} --n-bins {params.n_bins} --seed {params.seed} --evaluation {params.evaluation:q} "
        "--out-root {params.out_root:q} > {log:q} 2>&1"


rule select_lego:
    input:
        lambda w: PLAN.evaluations(PLAN.variants, [w.fold]),
    output:
        **PLAN.evaluation(CHOSEN, "{fold}"),
    log:
        f"{OUT}/logs/select_lego/fold{{fold}}.log",
    conda:
        "../envs/models.yaml"
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        metrics=lambda w, input: quoted(p for p in input if p.endswith(METRICS_FILE)),
        out_dir=lambda w, output: os.path.dirname(output.metrics),
        rule=config["model"]["selection"],
    shell:
        "lego select-variant --metrics {params.metrics} --rule {params.rule:q} --out-dir {params.out_dir:q} > {log:q} 2>&1"


rule ensemble:
    input:
        blocks=lambda w: [PLAN.evaluation(b, w.fold)["metrics"] for b in PLAN.blocks],
        predictions=lambda w: [PLAN.evaluation(b, w.fold)["predictions"] for b in PLAN.blocks],
        labels=rules.ingest_labels.output[0],
        folds=rules.make_folds.output[0],
    output:
        **PLAN.evaluation(ENSEMBLE, "{fold}"),
    log:
        f"{OUT}/logs/ensemble/fold{{fold}}.log",
    conda:
        "../envs/models.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        evaluation=PLAN.metric_options,
        out_dir=lambda w, output: os.path.dirname(output.metrics),
    shell:
        "lego ensemble --block-metrics {input.blocks:q} --labels {input.labels:q} --folds {input.folds:q} "
        "--evaluation {params.evaluation:q} --out-dir {params.out_dir:q} > {log:q} 2>&1"


rule summarise:
    input:
        metrics=[PLAN.evaluation(m, k)["metrics"] for m in PLAN.all_models for k in PLAN.folds],
        predictions=[PLAN.evaluation(m, k)["predictions"] for m in PLAN.all_models for k in PLAN.folds],
    output:
        metrics=report(f"{OUT}/summary/metrics.tsv", caption="../workflow/report/metrics.rst", category="Tables"),
        folds=report(f"{OUT}/summary/folds.tsv", caption="../workflow/report/folds_table.rst", category="Tables"),
        comparisons=report(
            f"{OUT}/summary/comparisons.tsv", caption="../workflow/report/comparisons.rst", category="Tables"
        ),
        tables=report(f"{OUT}/summary/tables.html", caption="../workflow/report/tables.rst", category="Tables"),
    log:
        f"{OUT}/logs/summarise.log",
    benchmark:
        f"{OUT}/benchmarks/summarise.tsv"
    conda:
        "../envs/models.yaml"
    resources:
        mem_mb=grows(4000),
        runtime=20,
    params:
        evaluation=PLAN.bootstrap_options,
        out_dir=lambda w, output: os.path.dirname(output.metrics),
    shell:
        "lego summarise --metrics {input.metrics:q} --evaluation {params.evaluation:q} --out-dir {params.out_dir:q} "
        "> {log:q} 2>&1"


rule figures:
    input:
        summary=rules.summarise.output.metrics,
        folds=rules.summarise.output.folds,
        metrics=[PLAN.evaluation(m, k)["metrics"] for m in PLAN.all_models for k in PLAN.folds],
        predictions=[PLAN.evaluation(m, k)["predictions"] for m in PLAN.all_models for k in PLAN.folds],
        thumbnails=qc_thumbnails,
    output:
        risk=report(
            f"{OUT}/summary/figures/risk_groups.png", caption="../workflow/report/risk_groups.rst", category="Figures"
        ),
        folds=report(f"{OUT}/summary/figures/folds.png", caption="../workflow/report/folds.rst", category="Figures"),
        merge=report(
            f"{OUT}/summary/figures/merge_vs_ensemble.png",
            caption="../workflow/report/merge_vs_ensemble.rst",
            category="Figures",
        ),
        qc=report(
            f"{OUT}/summary/figures/qc_thumbnails.png",
            caption="../workflow/report/qc_thumbnails.rst",
            category="Figures",
        ),
    log:
        f"{OUT}/logs/figures.log",
    conda:
        "../envs/models.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        summary_dir=lambda w, input: os.path.dirname(input.summary),
        thumbnails=lambda w, input: quoted(input.thumbnails),
        out_dir=lambda w, output: os.path.dirname(output.risk),
    shell:
        "lego figures --summary-dir {params.summary_dir:q} --metrics {input.metrics:q} --thumbnails {params.thumbnails} "
        "--out-dir {params.out_dir:q} > {log:q} 2>&1"


rule heatmaps:
    # Attention over the patches of each test slide, for every model with patch attention over a
    # slide modality (a slide block, ABMIL, late fusion, MCAT): model kinds say which (heatmaps=True).
    # One job draws every fold of a model, as evaluate scores them: a job's start (torch) cost a
    # third of a fold's drawing, and Snakemake checks each job's inputs (every slide) while it waits.
    input:
        model_files=lambda w: every_fold_model_files(w.drawn),
        data=lambda w: [PLAN.data_path(m) for m in PLAN.model_modalities(w.drawn)],
        features=lambda w: [f for m in PLAN.heatmap_models[w.drawn] for f in slide_features(m)],
        slides=rules.index_slides.output.slides,
        slide_files=lambda w: sorted({f for m in PLAN.heatmap_models[w.drawn] for f in slide_files(m)}),
        folds=rules.make_folds.output[0],
    output:
        [
            report(
                directory(f"{OUT}/heatmaps/{{drawn}}/fold{k}"),
                patterns=["previews/{name}.jpg"],  # small previews; the full PNGs stay beside them
                caption="../workflow/report/heatmaps.rst",
                category="Heatmaps",
                subcategory=f"{{drawn}}, fold {k}",
            )
            for k in PLAN.folds
        ],
    log:
        f"{OUT}/logs/heatmaps/{{drawn}}.log",
    benchmark:
        f"{OUT}/benchmarks/heatmaps/{{drawn}}.tsv"
    conda:
        "../envs/models.yaml"
    threads: TRAIN_RUN["threads"]
    resources:
        mem_mb=grows(3000),
        runtime=grows(20 * len(PLAN.folds)),  # minutes: 20 per fold drawn, more on a retry
    params:
        model_dirs=lambda w, input: folders(input.model_files),
        data=lambda w, input: named_paths(PLAN.model_modalities(w.drawn), input.data),
        slides=lambda w, input: "" if not input.slide_files else f"--slides {shlex.quote(input.slides)}",
        out_dirs=lambda w, output: quoted(output),
    shell:
        "lego heatmaps --model-dir {params.model_dirs} --data {params.data} --folds {input.folds:q} "
        "{params.slides} --threads {threads} --out-dir {params.out_dirs} > {log:q} 2>&1"


rule draw_attention:
    # Attention over the inputs of a modality kind that draws them (images: a PNG per test image),
    # for the single-modality models with attention over it (its block, the plain ABMIL).
    input:
        model_files=lambda w: model_files(PLAN.model_folder(w.pictured, w.fold), history=False),
        data=lambda w: PLAN.data_path(PLAN.drawn_models[w.pictured]),
        files=lambda w: PLAN.preparation_files(PLAN.drawn_models[w.pictured]),
        folds=rules.make_folds.output[0],
    output:
        report(
            directory(f"{OUT}/attention/{{pictured}}/fold{{fold}}"),
            patterns=["previews/{name}.jpg"],  # a bounded number of small previews; the full PNGs beside them
            caption="../workflow/report/heatmaps.rst",
            category="Heatmaps",
            subcategory="{pictured}, fold {fold}",
        ),
    log:
        f"{OUT}/logs/draw_attention/{{pictured}}/fold{{fold}}.log",
    benchmark:
        f"{OUT}/benchmarks/draw_attention/{{pictured}}/fold{{fold}}.tsv"
    conda:
        "../envs/models.yaml"
    resources:
        mem_mb=grows(3000),
        runtime=20,
    params:
        model_dir=lambda w, input: os.path.dirname(input.model_files[0]),
    shell:
        "lego draw-attention --model-dir {params.model_dir:q} --data {input.data:q} --folds {input.folds:q} "
        "--out-dir {output:q} > {log:q} 2>&1"


rule predict:
    input:
        model_files=lambda w: model_files(PLAN.model_folder(w.model, w.fold, config["predict"]["from"]), history=False),
        data=lambda w: [PLAN.data_path(m) for m in predict_modalities(w)],
        labels=rules.ingest_labels.output[0],
    output:
        **PLAN.evaluation("{model}", "{fold}", stage="predict"),
    log:
        f"{OUT}/logs/predict/{{model}}/fold{{fold}}.log",
    benchmark:
        f"{OUT}/benchmarks/predict/{{model}}/fold{{fold}}.tsv"
    conda:
        "../envs/models.yaml"
    resources:
        mem_mb=grows(4000),
        runtime=20,
    params:
        model_dir=lambda w, input: os.path.dirname(input.model_files[0]),
        data=lambda w, input: named_paths(predict_modalities(w), input.data),
        evaluation=PLAN.metric_options,
        out_dir=lambda w, output: os.path.dirname(output.metrics),
    shell:
        "lego predict --model-dir {params.model_dir:q} --name {wildcards.model} --data {params.data} "
        "--labels {input.labels:q} --evaluation {params.evaluation:q} --out-dir {params.out_dir:q} > {log:q} 2>&1"


rule predict_summary:
    input:
        [PLAN.evaluation(model, fold, stage="predict")["metrics"] for model, fold, _ in PLAN.predict_runs],
    output:
        f"{OUT}/predict/summary.tsv",
    log:
        f"{OUT}/logs/predict_summary.log",
    conda:
        "../envs/models.yaml"
    resources:
        mem_mb=1000,
        runtime=5,
    shell:
        "lego predict-summary --metrics {input:q} --out {output:q} > {log:q} 2>&1"
