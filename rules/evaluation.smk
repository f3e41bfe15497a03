# Evaluation: every model (LegoBlocks, LegoMerge, LegoFuse, baselines, the late-fusion ensemble)
# ends as eval/<model>/fold<k>/{predictions.parquet,metrics.json}; the summary tables, figures
# and the Snakemake report are built from those files alone.


rule evaluate:
    input:
        model=model_weights,
        config=model_config,
        data=model_data,
        labels=rules.ingest_labels.output[0],
        folds=rules.make_folds.output[0],
    output:
        metrics=f"{OUT}/eval/{{model}}/fold{{fold}}/metrics.json",
        predictions=f"{OUT}/eval/{{model}}/fold{{fold}}/predictions.parquet",
    params:
        model_dir=lambda w, input: os.path.dirname(input.model),
        data=lambda w, input: named_paths(model_modalities(w.model), input.data),
        evaluation=METRIC_OPTIONS,
        run=cli_args({"threads": TRAIN_RUN["threads"]}),
        out_dir=lambda w, output: os.path.dirname(output.metrics),
    log:
        f"{OUT}/logs/evaluate/{{model}}/fold{{fold}}.log",
    benchmark:
        f"{OUT}/benchmarks/evaluate/{{model}}/fold{{fold}}.tsv"
    threads: TRAIN_RUN["threads"]
    conda:
        "../envs/models.yaml"
    resources:
        mem_mb=grows(4000),
        runtime=20,
    shell:
        "lego evaluate --model-dir {params.model_dir:q} --name {wildcards.model} --data {params.data} "
        "--labels {input.labels:q} --folds {input.folds:q} --evaluation {params.evaluation:q} {params.run} "
        "--out-dir {params.out_dir:q} > {log:q} 2>&1"


rule baselines:
    input:
        data=lambda w: [f"{OUT}/modalities/{m}.parquet" for m in baseline_modalities(w.source)],
        labels=rules.ingest_labels.output[0],
        folds=rules.make_folds.output[0],
    output:
        metrics=expand(f"{OUT}/eval/{{method}}-{{{{source}}}}/fold{{{{fold}}}}/metrics.json", method=BASELINE_METHODS),
        predictions=expand(f"{OUT}/eval/{{method}}-{{{{source}}}}/fold{{{{fold}}}}/predictions.parquet", method=BASELINE_METHODS),
    params:
        methods=" ".join(BASELINE_METHODS),
        data=lambda w, input: named_paths(baseline_modalities(w.source), input.data),
        modalities=lambda w: json.dumps(baseline_specs(w.source), sort_keys=True),
        task=config["cohort"]["task"],
        n_bins=config["model"]["n_bins"],
        seed=config["evaluation"]["seed"],
        evaluation=METRIC_OPTIONS,
        out_root=lambda w, output: os.path.dirname(os.path.dirname(os.path.dirname(output.metrics[0]))),
    log:
        f"{OUT}/logs/baselines/{{source}}/fold{{fold}}.log",
    benchmark:
        f"{OUT}/benchmarks/baselines/{{source}}/fold{{fold}}.tsv"
    conda:
        "../envs/models.yaml"
    resources:
        mem_mb=grows(8000),
        runtime=60,
    shell:
        "lego baselines --methods {params.methods} --source {wildcards.source} --data {params.data} "
        "--modalities {params.modalities:q} --labels {input.labels:q} --folds {input.folds:q} --fold {wildcards.fold} "
        "--task {params.task} --n-bins {params.n_bins} --seed {params.seed} --evaluation {params.evaluation:q} "
        "--out-root {params.out_root:q} > {log:q} 2>&1"


rule abmil_baseline:
    input:
        data=f"{OUT}/modalities/{{wsi}}.parquet",
        labels=rules.ingest_labels.output[0],
        folds=rules.make_folds.output[0],
    output:
        metrics=f"{OUT}/eval/abmil-{{wsi}}/fold{{fold}}/metrics.json",
        predictions=f"{OUT}/eval/abmil-{{wsi}}/fold{{fold}}/predictions.parquet",
        weights=f"{OUT}/eval/abmil-{{wsi}}/fold{{fold}}/model.safetensors",
        config=f"{OUT}/eval/abmil-{{wsi}}/fold{{fold}}/config.json",
        history=f"{OUT}/eval/abmil-{{wsi}}/fold{{fold}}/history.json",
    params:
        # The WSI block's own training options: the comparison isolates the Lego latent.
        spec=lambda w: json.dumps(block_spec(w.wsi), sort_keys=True),
        task=config["cohort"]["task"],
        evaluation=METRIC_OPTIONS,
        run=cli_args({k: TRAIN_RUN[k] for k in ("device", "threads")}),
        out_dir=lambda w, output: os.path.dirname(output.metrics),
    log:
        f"{OUT}/logs/abmil_baseline/{{wsi}}/fold{{fold}}.log",
    benchmark:
        f"{OUT}/benchmarks/abmil_baseline/{{wsi}}/fold{{fold}}.tsv"
    threads: TRAIN_RUN["threads"]
    conda:
        "../envs/models.yaml"
    resources:
        mem_mb=grows(8000),
        runtime=120,
        gpu=TRAIN_RUN["gpus"],
    shell:
        "lego abmil --modality {wildcards.wsi} --data {input.data:q} --labels {input.labels:q} --folds {input.folds:q} "
        "--fold {wildcards.fold} --task {params.task} --spec {params.spec:q} --evaluation {params.evaluation:q} "
        "{params.run} --out-dir {params.out_dir:q} > {log:q} 2>&1"


rule select_lego:
    input:
        expand(f"{OUT}/eval/{{model}}/fold{{{{fold}}}}/metrics.json", model=LEGO_VARIANTS),
        expand(f"{OUT}/eval/{{model}}/fold{{{{fold}}}}/predictions.parquet", model=LEGO_VARIANTS),
    output:
        metrics=f"{OUT}/eval/lego/fold{{fold}}/metrics.json",
        predictions=f"{OUT}/eval/lego/fold{{fold}}/predictions.parquet",
    params:
        metrics=lambda w, input: " ".join(shlex.quote(p) for p in input if p.endswith("metrics.json")),
        out_dir=lambda w, output: os.path.dirname(output.metrics),
        rule=config["model"]["selection"],
    log:
        f"{OUT}/logs/select_lego/fold{{fold}}.log",
    conda:
        "../envs/models.yaml"
    resources:
        mem_mb=1000,
        runtime=5,
    shell:
        "lego select-variant --metrics {params.metrics} --rule {params.rule:q} --out-dir {params.out_dir:q} > {log:q} 2>&1"


rule ensemble:
    input:
        blocks=lambda w: expand(f"{OUT}/eval/block-{{m}}/fold{w.fold}/metrics.json", m=MODALITIES),
        predictions=lambda w: expand(f"{OUT}/eval/block-{{m}}/fold{w.fold}/predictions.parquet", m=MODALITIES),
        labels=rules.ingest_labels.output[0],
        folds=rules.make_folds.output[0],
    output:
        metrics=f"{OUT}/eval/ensemble/fold{{fold}}/metrics.json",
        predictions=f"{OUT}/eval/ensemble/fold{{fold}}/predictions.parquet",
    params:
        evaluation=METRIC_OPTIONS,
        out_dir=lambda w, output: os.path.dirname(output.metrics),
    log:
        f"{OUT}/logs/ensemble/fold{{fold}}.log",
    conda:
        "../envs/models.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "lego ensemble --block-metrics {input.blocks:q} --labels {input.labels:q} --folds {input.folds:q} "
        "--evaluation {params.evaluation:q} --out-dir {params.out_dir:q} > {log:q} 2>&1"


rule summarise:
    input:
        metrics=expand(f"{OUT}/eval/{{model}}/fold{{fold}}/metrics.json", model=ALL_MODELS, fold=FOLDS),
        predictions=expand(f"{OUT}/eval/{{model}}/fold{{fold}}/predictions.parquet", model=ALL_MODELS, fold=FOLDS),
    output:
        metrics=report(f"{OUT}/summary/metrics.tsv", caption="../workflow/report/metrics.rst", category="Tables"),
        folds=report(f"{OUT}/summary/folds.tsv", caption="../workflow/report/folds_table.rst", category="Tables"),
        comparisons=report(f"{OUT}/summary/comparisons.tsv", caption="../workflow/report/comparisons.rst", category="Tables"),
        tables=report(f"{OUT}/summary/tables.html", caption="../workflow/report/tables.rst", category="Tables"),
    params:
        evaluation=BOOTSTRAP_OPTIONS,
        out_dir=lambda w, output: os.path.dirname(output.metrics),
    log:
        f"{OUT}/logs/summarise.log",
    benchmark:
        f"{OUT}/benchmarks/summarise.tsv"
    conda:
        "../envs/models.yaml"
    resources:
        mem_mb=grows(4000),
        runtime=20,
    shell:
        "lego summarise --metrics {input.metrics:q} --evaluation {params.evaluation:q} --out-dir {params.out_dir:q} "
        "> {log:q} 2>&1"


rule figures:
    input:
        summary=rules.summarise.output.metrics,
        folds=rules.summarise.output.folds,
        metrics=expand(f"{OUT}/eval/{{model}}/fold{{fold}}/metrics.json", model=ALL_MODELS, fold=FOLDS),
        predictions=expand(f"{OUT}/eval/{{model}}/fold{{fold}}/predictions.parquet", model=ALL_MODELS, fold=FOLDS),
        thumbnails=qc_thumbnails,
    output:
        risk=report(f"{OUT}/summary/figures/risk_groups.png", caption="../workflow/report/risk_groups.rst", category="Figures"),
        folds=report(f"{OUT}/summary/figures/folds.png", caption="../workflow/report/folds.rst", category="Figures"),
        merge=report(f"{OUT}/summary/figures/merge_vs_ensemble.png", caption="../workflow/report/merge_vs_ensemble.rst", category="Figures"),
        qc=report(f"{OUT}/summary/figures/qc_thumbnails.png", caption="../workflow/report/qc_thumbnails.rst", category="Figures"),
    params:
        summary_dir=lambda w, input: os.path.dirname(input.summary),
        thumbnails=lambda w, input: " ".join(shlex.quote(p) for p in input.thumbnails),
        out_dir=lambda w, output: os.path.dirname(output.risk),
    log:
        f"{OUT}/logs/figures.log",
    conda:
        "../envs/models.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "lego figures --summary-dir {params.summary_dir:q} --metrics {input.metrics:q} --thumbnails {params.thumbnails} "
        "--out-dir {params.out_dir:q} > {log:q} 2>&1"


rule heatmaps:
    input:
        weights=f"{OUT}/blocks/{{wsi}}/fold{{fold}}/model.safetensors",
        config=f"{OUT}/blocks/{{wsi}}/fold{{fold}}/config.json",
        manifest=f"{OUT}/modalities/{{wsi}}.parquet",
        features=slide_features,
        slides=rules.index_slides.output.slides,
        slide_files=lambda w: slide_files(w.wsi),
        folds=rules.make_folds.output[0],
    output:
        report(directory(f"{OUT}/heatmaps/{{wsi}}/fold{{fold}}"), patterns=["{name}.png"],
               caption="../workflow/report/heatmaps.rst", category="Heatmaps", subcategory="{wsi}, fold {fold}"),
    params:
        model_dir=lambda w, input: os.path.dirname(input.weights),
        slides=lambda w, input: "" if not input.slide_files else f"--slides {shlex.quote(input.slides)}",
    log:
        f"{OUT}/logs/heatmaps/{{wsi}}/fold{{fold}}.log",
    benchmark:
        f"{OUT}/benchmarks/heatmaps/{{wsi}}/fold{{fold}}.tsv"
    conda:
        "../envs/models.yaml"
    resources:
        mem_mb=grows(3000),
        runtime=20,
    shell:
        "lego heatmaps --model-dir {params.model_dir:q} --manifest {input.manifest:q} --folds {input.folds:q} "
        "{params.slides} --out-dir {output:q} > {log:q} 2>&1"


use rule heatmaps as abmil_heatmaps with:
    # The plain ABMIL baseline's attention, drawn the same way: where the Lego latent changes what
    # the slide encoder looks at, the two sets of heatmaps differ.
    input:
        weights=rules.abmil_baseline.output.weights,
        config=rules.abmil_baseline.output.config,
        manifest=f"{OUT}/modalities/{{wsi}}.parquet",
        features=slide_features,
        slides=rules.index_slides.output.slides,
        slide_files=lambda w: slide_files(w.wsi),
        folds=rules.make_folds.output[0],
    output:
        report(directory(f"{OUT}/heatmaps/abmil-{{wsi}}/fold{{fold}}"), patterns=["{name}.png"],
               caption="../workflow/report/heatmaps.rst", category="Heatmaps", subcategory="abmil-{wsi}, fold {fold}"),
    log:
        f"{OUT}/logs/heatmaps/abmil-{{wsi}}/fold{{fold}}.log",
    benchmark:
        f"{OUT}/benchmarks/heatmaps/abmil-{{wsi}}/fold{{fold}}.tsv"


rule predict:
    input:
        weights=lambda w: f"{model_folder(w.model, w.fold, PREDICT_FROM)}/model.safetensors",
        config=lambda w: f"{model_folder(w.model, w.fold, PREDICT_FROM)}/config.json",
        data=lambda w: [f"{OUT}/modalities/{m}.parquet" for m in predict_modalities(w)],
        labels=rules.ingest_labels.output[0],
    output:
        metrics=f"{OUT}/predict/{{model}}/fold{{fold}}/metrics.json",
        predictions=f"{OUT}/predict/{{model}}/fold{{fold}}/predictions.parquet",
    params:
        model_dir=lambda w, input: os.path.dirname(input.weights),
        data=lambda w, input: named_paths(predict_modalities(w), input.data),
        evaluation=METRIC_OPTIONS,
        out_dir=lambda w, output: os.path.dirname(output.metrics),
    log:
        f"{OUT}/logs/predict/{{model}}/fold{{fold}}.log",
    benchmark:
        f"{OUT}/benchmarks/predict/{{model}}/fold{{fold}}.tsv"
    conda:
        "../envs/models.yaml"
    resources:
        mem_mb=grows(4000),
        runtime=20,
    shell:
        "lego predict --model-dir {params.model_dir:q} --name {wildcards.model} --data {params.data} "
        "--labels {input.labels:q} --evaluation {params.evaluation:q} --out-dir {params.out_dir:q} > {log:q} 2>&1"


rule predict_summary:
    input:
        [f"{OUT}/predict/{model}/fold{fold}/metrics.json" for model, fold, _ in PREDICT_RUNS],
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
