# Cohort assembly: outcomes, slide index, folds, the per-patient table and slide QC.


rule ingest_labels:
    input:
        external(config["cohort"]["labels"]["path"]),
    output:
        f"{OUT}/cohort/labels.parquet",
    log:
        f"{OUT}/logs/ingest_labels.log",
    conda:
        "../envs/tabular.yaml"
    resources:
        mem_mb=grows(4000),
        runtime=10,
    params:
        task=config["cohort"]["task"],
        args=cli_args(config["cohort"]["labels"], skip=("path",)),
        digest=digest(config["cohort"]["labels"]["path"]),
    shell:
        "lego ingest-labels --table {input:q} --task {params.task} {params.args} --out {output:q} > {log:q} 2>&1"


checkpoint index_slides:
    input:
        labels=rules.ingest_labels.output[0],
        sources=external(PLAN.slide_source_paths()),
    output:
        slides=f"{OUT}/cohort/slides.parquet",
        unmatched=f"{OUT}/qc/unmatched_slides.tsv",
    log:
        f"{OUT}/logs/index_slides.log",
    conda:
        "../envs/tabular.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        args=cli_args({**PLAN.slide_sources(), **config["slides"]["patient_id"]}),
        digest=digest(PLAN.slide_source_paths()),
    shell:
        "lego index-slides --labels {input.labels:q} {params.args} "
        "--out {output.slides:q} --unmatched {output.unmatched:q} > {log:q} 2>&1"


rule make_folds:
    input:
        labels=rules.ingest_labels.output[0],
        sources=external(PLAN.fold_sources),
    output:
        f"{OUT}/cohort/folds.parquet",
    log:
        f"{OUT}/logs/make_folds.log",
    conda:
        "../envs/tabular.yaml"
    resources:
        mem_mb=2000,
        runtime=5,
    params:
        args=cli_args(config["folds"]),
        digest=digest(PLAN.fold_sources),
    shell:
        "lego make-folds --labels {input.labels:q} {params.args} --out {output:q} > {log:q} 2>&1"


rule cohort_table:
    input:
        labels=rules.ingest_labels.output[0],
        tabular=[PLAN.data_path(m) for m in PLAN.read_as("modality")],
        wsi=[PLAN.data_path(m) for m in PLAN.read_as("manifest")],
    output:
        f"{OUT}/cohort/patients.parquet",
    log:
        f"{OUT}/logs/cohort_table.log",
    conda:
        "../envs/tabular.yaml"
    resources:
        mem_mb=2000,
        runtime=5,
    params:
        tabular=lambda w, input: named_paths(PLAN.read_as("modality"), input.tabular),
        wsi=lambda w, input: named_paths(PLAN.read_as("manifest"), input.wsi),
    shell:
        "lego cohort-table --labels {input.labels:q} --tabular {params.tabular} --wsi {params.wsi} "
        "--out {output:q} > {log:q} 2>&1"


rule collect_qc:
    input:
        manifests=[PLAN.data_path(m) for m in PLAN.slide_modalities],
        unmatched=rules.index_slides.output.unmatched,
    output:
        f"{OUT}/qc/failed.tsv",
    log:
        f"{OUT}/logs/collect_qc.log",
    conda:
        "../envs/tabular.yaml"
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        manifests=lambda w, input: named_paths(PLAN.slide_modalities, input.manifests),
    shell:
        "lego collect-qc --manifest {params.manifests} --unmatched {input.unmatched:q} --out {output:q} > {log:q} 2>&1"
