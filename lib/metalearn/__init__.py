"""metalearn: the survey of meta-learning, one module per slide, in floors.

    core/          the bottom floor: files, the library's import graph (source), episodes, models, the training loop,
                   evaluation, the model store, results rows, the nearest-prototype rule and the functional inner
                   loop (fine-tuning with explicit parameters) that several families share
    datasets/      fetching and verifying the data sets (fetch), loaders, molecular fingerprints and tasks,
                   torchmeta's loaders, task-shift formats
    background/    pre-training & fine-tuning                                 metalearn.background.pretrain
    metric/        Siamese networks                                           metalearn.metric.siamese
                   Relation Network                                           metalearn.metric.relation_net
                   Matching Network                                           metalearn.metric.matching_net
                   Prototypical Networks                                      metalearn.metric.protonet
                   Meta-GNN (few-shot graph neural networks)                  metalearn.metric.meta_gnn
                   (shared: episodic training and scoring)                    metalearn.metric.episodic
    model_based/   MANN (memory-augmented neural networks)                    metalearn.model_based.mann
                   Meta Networks                                              metalearn.model_based.meta_networks
                   HyperNetworks                                              metalearn.model_based.hypernetwork
    gradient/      MAML                                                       metalearn.gradient.maml
                   FOMAML (first-order MAML)                                  metalearn.gradient.fomaml
                   Reptile                                                    metalearn.gradient.reptile
                   ANIL                                                       metalearn.gradient.anil
                   MAML on sinusoid regression                                metalearn.gradient.regression
                   (shared: the outer loop; faster meta-steps)                metalearn.gradient.outer_loop,
                                                                              metalearn.gradient.task_batched
    drugs/         drug discovery: few-shot molecular property prediction     metalearn.drugs.property_prediction
                   multitask pre-training & fine-tuning on molecules          metalearn.drugs.multitask
    study/         the chapters' glue, the only floor above the methods: the pipeline, the chapters' shared
                   experiment code, papers' numbers, plots, the report site, benchmarks

A method imports only core, datasets and its family's shared modules, never another method's module
(``tests/test_structure.py``), so editing one method re-runs only the chapters that train or score it.
"""
