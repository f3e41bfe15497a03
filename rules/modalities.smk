# Tabular modalities: each gets only its own section of the config, so changing one modality's
# source or columns reruns that modality's branch alone.


rule prepare_modality:
    input:
        lambda w: MODALITIES[w.tabular]["path"],
    output:
        f"{OUT}/modalities/{{tabular}}.parquet",
    params:
        args=lambda w: cli_args(MODALITIES[w.tabular], skip=("kind", "path")),
    log:
        f"{OUT}/logs/prepare_modality/{{tabular}}.log",
    conda:
        "../envs/tabular.yaml"
    resources:
        mem_mb=8000,
        runtime=15,
    shell:
        "lego prepare-modality --table {input:q} --modality {wildcards.tabular} {params.args} "
        "--out {output:q} > {log:q} 2>&1"
