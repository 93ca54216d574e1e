"""Two chained jobs: the second counts the characters of the first one's output file.

The hub sees that job 2's input is job 1's output, so job 2 waits (isRunnable False)
until job 1 has completed. Run with PAIRIO_API_KEY set (or after 'pairio login');
PAIRIO_SERVICE_NAME picks the service.
"""

import os

from pairio.client import (
    PairioJobDefinition,
    PairioJobInputFile,
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
    job1 = submit_job(
        service_name=service_name,
        job_definition=job_def,
        required_resources=required_resources,
        tags=['example']
    )
    print(job1.job_url, job1.status)

    job2_def = PairioJobDefinition(
        appName='hello_world',
        processorName='count_characters',
        inputFiles=[
            PairioJobInputFile(
                name='input',
                fileBaseName='input.txt',
                url=job1.get_output('output')
            )
        ],
        outputFiles=[
            PairioJobOutputFile(
                name='output',
                fileBaseName='output.json'
            )
        ],
        parameters=[
            PairioJobParameter(
                name='include_whitespace',
                value=True
            )
        ]
    )
    job2 = submit_job(
        service_name=service_name,
        job_definition=job2_def,
        required_resources=required_resources,
        tags=['example'],
        rerun_failing=True
    )
    print(job2.job_url, job2.status, job2.isRunnable)


if __name__ == '__main__':
    main()
