"""A job that writes an output file (output.txt containing "Hello, world!").

Run with PAIRIO_API_KEY set (or after 'pairio login'); PAIRIO_SERVICE_NAME picks the service.
"""

import os

from pairio.client import (
    PairioJobDefinition,
    PairioJobOutputFile,
    PairioJobParameter,
    PairioJobRequiredResources,
    submit_job,
)


def main() -> None:
    service_name = os.getenv('PAIRIO_SERVICE_NAME', 'hello_world_service')

    job_def = PairioJobDefinition(
        appName='hello_world',
        processorName='hello_world_2',
        inputFiles=[],
        outputFiles=[
            PairioJobOutputFile(
                name='output',
                fileBaseName='output.txt'
            )
        ],
        parameters=[
            PairioJobParameter(
                name='name',
                value='world'
            )
        ]
    )
    required_resources = PairioJobRequiredResources(
        numCpus=1,
        numGpus=0,
        memoryGb=4,
        timeSec=60
    )
    job = submit_job(
        service_name=service_name,
        job_definition=job_def,
        required_resources=required_resources,
        tags=['example']
    )
    print(job.job_url, job.status)


if __name__ == '__main__':
    main()
