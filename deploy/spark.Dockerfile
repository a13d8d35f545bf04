# The image of silver SparkApplications (ASGARD_SPARK_IMAGE): Apache Spark 3.5 with Python,
# the asgard_assets package files at /opt/asgard (the engine runs
# local:///opt/asgard/asgard_assets/silver/spark_job.py) and sqlglot, the job's only
# dependency beyond pyspark. Build from the repository root:
#   docker build -f deploy/spark.Dockerfile -t registry.example.com/asgard/spark:0.1.0 .
FROM apache/spark:3.5.3-python3
USER root
RUN pip install --no-cache-dir "sqlglot==30.30.0"
COPY asgard_assets /opt/asgard/asgard_assets
# Iceberg's runtime jars are fetched at submit (ASGARD_SPARK_PACKAGES). To bake them in
# instead (no Maven access from the cluster), uncomment and set ASGARD_SPARK_PACKAGES=none:
# ADD https://repo1.maven.org/maven2/org/apache/iceberg/iceberg-spark-runtime-3.5_2.12/1.7.1/iceberg-spark-runtime-3.5_2.12-1.7.1.jar /opt/spark/jars/
# ADD https://repo1.maven.org/maven2/org/apache/iceberg/iceberg-aws-bundle/1.7.1/iceberg-aws-bundle-1.7.1.jar /opt/spark/jars/
# RUN chmod 644 /opt/spark/jars/iceberg-*.jar
USER spark
