# Modalities prepared from a table: each by its kind's command (lego.modality_kinds: e.g.
# prepare-modality for tabular), given only its own section's preparation settings, so changing one
# modality's source or columns reruns that modality's branch alone (and changing its block
# hyper-parameters reruns its blocks, not its preparation). Slide modalities: slides.smk.


rule prepare_modality:
    input:
        table=lambda w: external(MODALITIES[w.prepared]["path"]),
        files=lambda w: PLAN.preparation_files(w.prepared),
    output:
        f"{OUT}/modalities/{{prepared}}.parquet",
    log:
        f"{OUT}/logs/prepare_modality/{{prepared}}.log",
    benchmark:
        f"{OUT}/benchmarks/prepare_modality/{{prepared}}.tsv"
    conda:
        "../envs/tabular.yaml"
    resources:
        mem_mb=grows(8000),
        runtime=15,
    params:
        command=lambda w: PLAN.prepare_args(w.prepared)[0],
        args=lambda w: cli_args(PLAN.prepare_args(w.prepared)[1]),
        digest=lambda w: digest(MODALITIES[w.prepared]["path"]),
    shell:
        "lego {params.command} --table {input.table:q} --modality {wildcards.prepared} {params.args} "
        "--out {output:q} > {log:q} 2>&1"
