# Back half of the DAG: a LegoBlock per modality and fold, LegoMerge and LegoFuse per fold
# (evaluation, baselines and the report are in evaluation.smk), and the run's provenance.


rule train_block:
    input:
        data=f"{OUT}/modalities/{{modality}}.parquet",
        labels=rules.ingest_labels.output[0],
        folds=rules.make_folds.output[0],
    output:
        weights=f"{OUT}/blocks/{{modality}}/fold{{fold}}/candidates/c{{candidate}}/model.safetensors",
        config=f"{OUT}/blocks/{{modality}}/fold{{fold}}/candidates/c{{candidate}}/config.json",
        history=f"{OUT}/blocks/{{modality}}/fold{{fold}}/candidates/c{{candidate}}/history.json",
    params:
        kind=lambda w: MODALITIES[w.modality]["kind"],
        spec=lambda w: json.dumps(candidate_spec(w.modality, w.candidate), sort_keys=True),
        categorical=lambda w: cli_args({"categorical": MODALITIES[w.modality].get("categorical") or None}),
        task=config["cohort"]["task"],
        run=cli_args({k: TRAIN_RUN[k] for k in ("device", "threads")}),
        out_dir=lambda w, output: os.path.dirname(output.weights),
    log:
        f"{OUT}/logs/train_block/{{modality}}/fold{{fold}}/c{{candidate}}.log",
    benchmark:
        f"{OUT}/benchmarks/train_block/{{modality}}/fold{{fold}}/c{{candidate}}.tsv"
    threads: TRAIN_RUN["threads"]
    conda:
        "../envs/models.yaml"
    resources:
        mem_mb=grows(8000),
        runtime=120,
        gpu=TRAIN_RUN["gpus"],
    shell:
        "lego train-block --modality {wildcards.modality} --kind {params.kind} --data {input.data:q} "
        "--labels {input.labels:q} --folds {input.folds:q} --fold {wildcards.fold} --task {params.task} "
        "--spec {params.spec:q} {params.categorical} {params.run} --out-dir {params.out_dir:q} > {log:q} 2>&1"


rule select_block:
    input:
        block_candidates,
    output:
        weights=f"{OUT}/blocks/{{modality}}/fold{{fold}}/model.safetensors",
        config=f"{OUT}/blocks/{{modality}}/fold{{fold}}/config.json",
        history=f"{OUT}/blocks/{{modality}}/fold{{fold}}/history.json",
        selection=f"{OUT}/blocks/{{modality}}/fold{{fold}}/selection.json",
    params:
        candidates=lambda w, input: " ".join(shlex.quote(os.path.dirname(p)) for p in input if p.endswith(".safetensors")),
        rule=config["model"]["selection"],
        out_dir=lambda w, output: os.path.dirname(output.weights),
    log:
        f"{OUT}/logs/select_block/{{modality}}/fold{{fold}}.log",
    conda:
        "../envs/models.yaml"
    resources:
        mem_mb=1000,
        runtime=5,
    shell:
        "lego select-block --candidates {params.candidates} --rule {params.rule} --out-dir {params.out_dir:q} > {log:q} 2>&1"


rule merge:
    input:
        fold_blocks,
    output:
        weights=f"{OUT}/merge/fold{{fold}}/model.safetensors",
        config=f"{OUT}/merge/fold{{fold}}/config.json",
    params:
        blocks=lambda w, input: block_dirs(input),
        method=config["model"]["merge"]["method"],
        head=config["model"]["merge"]["head"],
        out_dir=lambda w, output: os.path.dirname(output.weights),
    log:
        f"{OUT}/logs/merge/fold{{fold}}.log",
    conda:
        "../envs/models.yaml"
    resources:
        mem_mb=grows(4000),
        runtime=10,
    shell:
        "lego merge --blocks {params.blocks} --method {params.method} --head {params.head} "
        "--out-dir {params.out_dir:q} > {log:q} 2>&1"


rule merge_tuned:
    input:
        blocks=fold_blocks,
        data=expand(f"{OUT}/modalities/{{m}}.parquet", m=MODALITIES),
        labels=rules.ingest_labels.output[0],
        folds=rules.make_folds.output[0],
    output:
        weights=f"{OUT}/merge-tuned/fold{{fold}}/model.safetensors",
        config=f"{OUT}/merge-tuned/fold{{fold}}/config.json",
    params:
        blocks=lambda w, input: block_dirs(input.blocks),
        data=lambda w, input: named_paths(MODALITIES, input.data),
        head=config["model"]["merge"]["head"],
        search=cli_args({"search": config["model"]["merge"]["search"]}),
        run=cli_args({"threads": TRAIN_RUN["threads"]}),
        out_dir=lambda w, output: os.path.dirname(output.weights),
    log:
        f"{OUT}/logs/merge_tuned/fold{{fold}}.log",
    benchmark:
        f"{OUT}/benchmarks/merge_tuned/fold{{fold}}.tsv"
    threads: TRAIN_RUN["threads"]
    conda:
        "../envs/models.yaml"
    resources:
        mem_mb=grows(4000),
        runtime=20,
    shell:
        "lego merge-tuned --blocks {params.blocks} --data {params.data} --labels {input.labels:q} --folds {input.folds:q} "
        "--head {params.head} {params.search} {params.run} --out-dir {params.out_dir:q} > {log:q} 2>&1"


rule fuse:
    input:
        blocks=fold_blocks,
        data=expand(f"{OUT}/modalities/{{m}}.parquet", m=MODALITIES),
        labels=rules.ingest_labels.output[0],
        folds=rules.make_folds.output[0],
    output:
        weights=f"{OUT}/fuse/fold{{fold}}/model.safetensors",
        config=f"{OUT}/fuse/fold{{fold}}/config.json",
        history=f"{OUT}/fuse/fold{{fold}}/history.json",
    params:
        blocks=lambda w, input: block_dirs(input.blocks),
        data=lambda w, input: named_paths(MODALITIES, input.data),
        spec=json.dumps(fuse_spec(), sort_keys=True),
        run=cli_args({k: TRAIN_RUN[k] for k in ("device", "threads")}),
        out_dir=lambda w, output: os.path.dirname(output.weights),
    log:
        f"{OUT}/logs/fuse/fold{{fold}}.log",
    benchmark:
        f"{OUT}/benchmarks/fuse/fold{{fold}}.tsv"
    threads: TRAIN_RUN["threads"]
    conda:
        "../envs/models.yaml"
    resources:
        mem_mb=grows(8000),
        runtime=60,
        gpu=TRAIN_RUN["gpus"],
    shell:
        "lego fuse --blocks {params.blocks} --data {params.data} --labels {input.labels:q} --folds {input.folds:q} "
        "--spec {params.spec:q} {params.run} --out-dir {params.out_dir:q} > {log:q} 2>&1"


rule provenance:
    input:
        # Last in the DAG: it records the cost of every job before it.
        all_targets()[:-1],
    output:
        run=f"{OUT}/provenance/run.json",
        inputs=f"{OUT}/provenance/inputs.tsv",
        jobs=f"{OUT}/provenance/jobs.tsv",
    params:
        config=json.dumps(config, sort_keys=True, default=str),
        inputs=" ".join(shlex.quote(p) for p in provenance_inputs()),
        benchmarks=f"{OUT}/benchmarks",
        code_dir=workflow.basedir,
        out_dir=lambda w, output: os.path.dirname(output.run),
    log:
        f"{OUT}/logs/provenance.log",
    conda:
        "../envs/tabular.yaml"
    resources:
        mem_mb=1000,
        runtime=30,
    shell:
        "lego provenance --config-json {params.config:q} --inputs {params.inputs} --benchmarks {params.benchmarks:q} "
        "--code-dir {params.code_dir:q} --out-dir {params.out_dir:q} > {log:q} 2>&1"
