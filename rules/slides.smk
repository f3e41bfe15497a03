# Per-slide stages. A bad slide does not stop the run: its outputs record status=failed and the
# reason (--record-failure), and collect_qc lists it in qc/failed.tsv.


rule segment_tissue:
    input:
        slide=slide_path,
    output:
        tissue=f"{OUT}/slides/{{slide}}/tissue.parquet",
        png=f"{OUT}/slides/{{slide}}/tissue.png",
    log:
        f"{OUT}/logs/segment_tissue/{{slide}}.log",
    benchmark:
        f"{OUT}/benchmarks/segment_tissue/{{slide}}.tsv"
    conda:
        "../envs/slides.yaml"
    resources:
        mem_mb=3000,
        runtime=10,
    params:
        args=cli_args(config["tissue"]),
        mpp=mpp_arg(),
    shell:
        "lego segment --slide {input.slide:q} --out-tissue {output.tissue:q} --out-png {output.png:q} "
        "{params.args} {params.mpp} --record-failure > {log:q} 2>&1"


rule extract_patches:
    input:
        slide=slide_path,
        tissue=rules.segment_tissue.output.tissue,
    output:
        f"{OUT}/slides/{{slide}}/patches.h5",
    log:
        f"{OUT}/logs/extract_patches/{{slide}}.log",
    benchmark:
        f"{OUT}/benchmarks/extract_patches/{{slide}}.tsv"
    conda:
        "../envs/slides.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        args=cli_args(config["patches"]),
        mpp=mpp_arg(),
    shell:
        "lego extract --slide {input.slide:q} --tissue {input.tissue:q} --out {output:q} "
        "{params.args} {params.mpp} --record-failure > {log:q} 2>&1"


rule embed_patches:
    input:
        slide=slide_path,
        patches=rules.extract_patches.output[0],
        checkpoint=encoder_checkpoint,
    output:
        f"{OUT}/features/{{encoder}}/{{slide}}.h5",
    log:
        f"{OUT}/logs/embed_patches/{{encoder}}/{{slide}}.log",
    benchmark:
        f"{OUT}/benchmarks/embed_patches/{{encoder}}/{{slide}}.tsv"
    wildcard_constraints:
        encoder=r"(?!imported-)[A-Za-z0-9_]+",
    conda:
        "../envs/slides.yaml"
    threads: config["embedding"]["threads"]
    resources:
        mem_mb=grows(6000),
        runtime=60,
        gpu=config["embedding"]["gpus"],
        lego_device=config["embedding"]["device"],
        lego_batch_size=config["embedding"]["batch_size"],
        lego_workers=config["embedding"]["num_workers"],
    params:
        args=cli_args(config["embedding"], skip=EMBEDDING_EXECUTION),
        checkpoint=lambda w: cli_args({"checkpoint": config["encoders"].get(w.encoder, {}).get("checkpoint")}),
        mpp=mpp_arg(),
    shell:
        "lego embed --slide {input.slide:q} --patches {input.patches:q} --encoder {wildcards.encoder} "
        "{params.checkpoint} --out {output:q} {params.args} --threads {threads} --device {resources.lego_device} "
        "--batch-size {resources.lego_batch_size} --num-workers {resources.lego_workers} {params.mpp} "
        "--record-failure > {log:q} 2>&1"


rule import_features:
    input:
        # The file itself: a feature file replaced in place reruns its import (and what depends on it).
        # A slide this modality's folder lacks (other imported folders have it) is a recorded failure;
        # the file appearing later changes the input set, which reruns the import.
        src=lambda w: [p] if os.path.isfile(p := imported_feature_file(w)) else [],
    output:
        f"{OUT}/features/imported-{{wsi}}/{{slide}}.h5",
    log:
        f"{OUT}/logs/import_features/{{wsi}}/{{slide}}.log",
    conda:
        "../envs/slides.yaml"
    resources:
        mem_mb=2000,
        runtime=5,
    params:
        src=imported_feature_file,
    shell:
        "lego import-features --src {params.src:q} --out {output:q} "
        "--slide-name {wildcards.slide:q} --record-failure > {log:q} 2>&1"


rule collect_slide_features:
    input:
        slides=rules.index_slides.output.slides,
        features=lambda w: slide_features(w.wsi),
    output:
        f"{OUT}/modalities/{{wsi}}.parquet",
    log:
        f"{OUT}/logs/collect_slide_features/{{wsi}}.log",
    conda:
        "../envs/slides.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        features_dir=lambda w: f"{OUT}/features/{PLAN.feature_set(w.wsi)}",
    shell:
        "lego feature-manifest --slides {input.slides:q} --features-dir {params.features_dir:q} "
        "--modality {wildcards.wsi} --out {output:q} > {log:q} 2>&1"
