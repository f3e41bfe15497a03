# The built-in synthetic cohort: slides (Aperio-style SVS), an MCAT-format omics CSV and a
# clinical CSV, all from one seed (see lego/demo/cohort.py for the generative model).


rule make_demo:
    output:
        clinical=f"{DEMO_DIR}/clinical.csv",
        omics=f"{DEMO_DIR}/omics_all_clean.csv.gz",
        truth=f"{DEMO_DIR}/hidden_factors.csv",
        signatures=f"{DEMO_DIR}/signatures.csv",
        slides=directory(f"{DEMO_DIR}/slides"),
    log:
        f"{DEMO_DIR}/logs/make_demo.log",
    benchmark:
        f"{DEMO_DIR}/benchmarks/make_demo.tsv"
    conda:
        "../envs/slides.yaml"
    threads: 2
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        n=config["demo"]["n_patients"],
        seed=config["demo"]["seed"],
        prefix=config["demo"]["prefix"],
        out=lambda w, output: os.path.dirname(output.clinical),
    shell:
        "lego make-demo --out {params.out:q} --patients {params.n} --seed {params.seed} --prefix {params.prefix} --workers {threads} > {log:q} 2>&1"
