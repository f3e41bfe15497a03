# Back half of the DAG: a LegoBlock per modality and fold (one job per grid candidate, then the
# choice on validation), LegoMerge and LegoFuse per fold, trained baselines, and the run's
# provenance. Evaluation, classical baselines and the report are in evaluation.smk.


rule train_block:
    input:
        data=PLAN.data_path("{modality}"),
        labels=rules.ingest_labels.output[0],
        folds=rules.make_folds.output[0],
    output:
        model_files(PLAN.candidate_folder("{modality}", "{fold}", "{candidate}")),
    log:
        f"{OUT}/logs/train_block/{{modality}}/fold{{fold}}/c{{candidate}}.log",
    benchmark:
        f"{OUT}/benchmarks/train_block/{{modality}}/fold{{fold}}/c{{candidate}}.tsv"
    conda:
        "../envs/models.yaml"
    threads: TRAIN_RUN["threads"]
    resources:
        mem_mb=grows(8000),
        runtime=120,
        gpu=PLAN.gpus(BLOCK),
        lego_device=TRAIN_RUN["device"],
    params:
        kind=lambda w: MODALITIES[w.modality]["kind"],
        spec=lambda w: json.dumps(PLAN.candidate_spec(w.modality, w.candidate), sort_keys=True),
        categorical=lambda w: cli_args({"categorical": MODALITIES[w.modality].get("categorical") or None}),
        task=config["cohort"]["task"],
        out_dir=lambda w, output: os.path.dirname(output[0]),
    shell:
        "lego train-block --modality {wildcards.modality} --kind {params.kind} --data {input.data:q} "
        "--labels {input.labels:q} --folds {input.folds:q} --fold {wildcards.fold} --task {params.task} "
        "--spec {params.spec:q} {params.categorical} --device {resources.lego_device} --threads {threads} --out-dir {params.out_dir:q} > {log:q} 2>&1"


rule select_block:
    input:
        lambda w: [
            f
            for c in range(len(PLAN.block_grid(w.modality)))
            for f in model_files(PLAN.candidate_folder(w.modality, w.fold, c))
        ],
    output:
        model_files(PLAN.block_folder("{modality}", "{fold}")),
        selection=f"{PLAN.block_folder('{modality}', '{fold}')}/selection.json",
    log:
        f"{OUT}/logs/select_block/{{modality}}/fold{{fold}}.log",
    conda:
        "../envs/models.yaml"
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        candidates=lambda w, input: folders(input),
        rule=config["model"]["selection"],
        out_dir=lambda w, output: os.path.dirname(output[0]),
    shell:
        "lego select-block --candidates {params.candidates} --rule {params.rule} --out-dir {params.out_dir:q} > {log:q} 2>&1"


rule merge:
    input:
        lambda w: PLAN.fold_block_files(w.fold),
    output:
        model_files(PLAN.model_folder(MERGE.name, "{fold}"), history=False),
    log:
        f"{OUT}/logs/merge/fold{{fold}}.log",
    conda:
        "../envs/models.yaml"
    resources:
        mem_mb=grows(4000),
        runtime=10,
    params:
        blocks=lambda w, input: folders(input),
        method=config["model"]["merge"]["method"],
        head=config["model"]["merge"]["head"],
        out_dir=lambda w, output: os.path.dirname(output[0]),
    shell:
        "lego merge --blocks {params.blocks} --method {params.method} --head {params.head} "
        "--out-dir {params.out_dir:q} > {log:q} 2>&1"


rule merge_tuned:
    input:
        blocks=lambda w: PLAN.fold_block_files(w.fold),
        data=[PLAN.data_path(m) for m in MODALITIES],
        labels=rules.ingest_labels.output[0],
        folds=rules.make_folds.output[0],
    output:
        model_files(PLAN.model_folder(MERGE_TUNED.name, "{fold}"), history=False),
    log:
        f"{OUT}/logs/merge_tuned/fold{{fold}}.log",
    benchmark:
        f"{OUT}/benchmarks/merge_tuned/fold{{fold}}.tsv"
    conda:
        "../envs/models.yaml"
    threads: TRAIN_RUN["threads"]
    resources:
        mem_mb=grows(4000),
        runtime=20,
    params:
        blocks=lambda w, input: folders(input.blocks),
        data=lambda w, input: named_paths(MODALITIES, input.data),
        head=config["model"]["merge"]["head"],
        search=cli_args({"search": config["model"]["merge"]["search"]}),
        out_dir=lambda w, output: os.path.dirname(output[0]),
    shell:
        "lego merge-tuned --blocks {params.blocks} --data {params.data} --labels {input.labels:q} --folds {input.folds:q} "
        "--head {params.head} {params.search} --threads {threads} --out-dir {params.out_dir:q} > {log:q} 2>&1"


rule fuse:
    input:
        blocks=lambda w: PLAN.fold_block_files(w.fold),
        data=[PLAN.data_path(m) for m in MODALITIES],
        labels=rules.ingest_labels.output[0],
        folds=rules.make_folds.output[0],
    output:
        model_files(PLAN.model_folder(FUSE.name, "{fold}")),
    log:
        f"{OUT}/logs/fuse/fold{{fold}}.log",
    benchmark:
        f"{OUT}/benchmarks/fuse/fold{{fold}}.tsv"
    conda:
        "../envs/models.yaml"
    threads: TRAIN_RUN["threads"]
    resources:
        mem_mb=grows(8000),
        runtime=60,
        gpu=PLAN.gpus(FUSE),
        lego_device=TRAIN_RUN["device"],
    params:
        blocks=lambda w, input: folders(input.blocks),
        data=lambda w, input: named_paths(MODALITIES, input.data),
        spec=json.dumps(PLAN.fuse_spec(), sort_keys=True),
        out_dir=lambda w, output: os.path.dirname(output[0]),
    shell:
        "lego fuse --blocks {params.blocks} --data {params.data} --labels {input.labels:q} --folds {input.folds:q} "
        "--spec {params.spec:q} --device {resources.lego_device} --threads {threads} --out-dir {params.out_dir:q} > {log:q} 2>&1"


rule train_model:
    # A trained baseline (lego.baselines, one module each): fitted on the fold like a block, then
    # scored by the evaluate rule and drawn by the heatmaps rule like any model.
    input:
        data=lambda w: [PLAN.data_path(m) for m in PLAN.model_modalities(w.trained)],
        files=lambda w: external(PLAN.trained_files(w.trained)),  # e.g. MCAT's gene signatures
        labels=rules.ingest_labels.output[0],
        folds=rules.make_folds.output[0],
    output:
        model_files(PLAN.trained_folder("{trained}", "{fold}")),
    log:
        f"{OUT}/logs/train_model/{{trained}}/fold{{fold}}.log",
    benchmark:
        f"{OUT}/benchmarks/train_model/{{trained}}/fold{{fold}}.tsv"
    conda:
        "../envs/models.yaml"
    threads: TRAIN_RUN["threads"]
    resources:
        mem_mb=grows(8000),
        runtime=120,
        gpu=lambda w: PLAN.gpus(PLAN.trained[w.trained].kind),
        lego_device=TRAIN_RUN["device"],
    params:
        kind=lambda w: PLAN.trained[w.trained].kind.name,
        data=lambda w, input: named_paths(PLAN.model_modalities(w.trained), input.data),
        modalities=lambda w: json.dumps(PLAN.modality_specs(PLAN.model_modalities(w.trained)), sort_keys=True),
        spec=lambda w: json.dumps(PLAN.trained_spec(w.trained), sort_keys=True),
        task=config["cohort"]["task"],
        digest=lambda w: digest(PLAN.trained_files(w.trained)),
        out_dir=lambda w, output: os.path.dirname(output[0]),
    shell:
        "lego train-model --model {params.kind} --data {params.data} --modalities {params.modalities:q} "
        "--labels {input.labels:q} --folds {input.folds:q} --fold {wildcards.fold} --task {params.task} "
        "--spec {params.spec:q} --device {resources.lego_device} --threads {threads} --out-dir {params.out_dir:q} > {log:q} 2>&1"


rule provenance:
    input:
        # Last in the DAG: it records the cost of every job before it.
        PLAN.targets(provenance=False),
    output:
        run=f"{OUT}/provenance/run.json",
        inputs=f"{OUT}/provenance/inputs.tsv",
        jobs=f"{OUT}/provenance/jobs.tsv",
    log:
        f"{OUT}/logs/provenance.log",
    conda:
        "../envs/tabular.yaml"
    resources:
        mem_mb=1000,
        runtime=30,
    params:
        config=json.dumps(PLAN.recorded_config(), sort_keys=True, default=str),
        inputs=quoted(PLAN.provenance_inputs()),
        benchmarks=f"{OUT}/benchmarks",
        code_dir=workflow.basedir,
        out_dir=lambda w, output: os.path.dirname(output.run),
    shell:
        "lego provenance --config-json {params.config:q} --inputs {params.inputs} --benchmarks {params.benchmarks:q} "
        "--code-dir {params.code_dir:q} --out-dir {params.out_dir:q} > {log:q} 2>&1"
