#!/usr/bin/env python3
# An app written against the original Pairio SDK's API (pairio==0.5.9), in the style of its
# apps: it must run unchanged on that SDK and on ours. Only names that SDK offers are used.

import json
import os
from typing import List, Optional

from pairio.sdk import App, BaseModel, Field, InputFile, OutputFile, ProcessorBase

app = App(
    app_name='original_style',
    description='Test app in the style of the original Pairio apps'
)


class GreetContext(BaseModel):
    name: str = Field(description='Who to greet', default='world')
    greeting: OutputFile = Field(description='The greeting, as text')


class GreetProcessor(ProcessorBase):
    name = 'greet'
    description = 'Writes a greeting into a text file'
    label = 'Greet'
    image = 'example/original-style:0.1.0'
    executable = '/app/main.py'
    attributes = {'wip': True}

    @staticmethod
    def run(context: GreetContext):
        with open('greeting.txt', 'w') as f:
            f.write(f'Hello, {context.name}!')
        context.greeting.upload('greeting.txt')  # deletes the local file, as by default in the original SDK
        assert not os.path.exists('greeting.txt')


class SummaryOptions(BaseModel):
    label: str = Field(description='A label for the summary')
    scale: float = Field(description='Multiplies the counts', default=1.0)


class SummarizeContext(BaseModel):
    texts: List[InputFile] = Field(description='Text files to summarize')
    summary: OutputFile = Field(description='JSON summary')
    repeat: int = Field(description='How many times to count each file')
    channels: List[int] = Field(description='Channel ids', default=[1, 2])
    threshold: Optional[float] = Field(description='Ignored; None for automatic', default=None)
    options: SummaryOptions


class SummarizeProcessor(ProcessorBase):
    name = 'summarize'
    description = 'Counts the characters of each text file'
    label = 'Summarize'
    image = 'example/original-style:0.1.0'
    executable = '/app/main.py'
    attributes = {'wip': True, 'label': 'Summarize'}

    @staticmethod
    def run(context: SummarizeContext):
        counts = []
        for i, f in enumerate(context.texts):
            assert f.get_url().startswith('http')
            assert f.file_base_name == 'greeting.txt'
            f.download(f'text_{i}.txt')
            with open(f'text_{i}.txt') as fh:
                counts.append(len(fh.read()) * context.repeat * context.options.scale)
        summary = {
            'counts': counts,
            'label': context.options.label,
            'channels': context.channels,
            'threshold': context.threshold,
        }
        with open('summary.json', 'w') as f:
            json.dump(summary, f)
        context.summary.upload('summary.json', delete_local_file=False)
        assert os.path.exists('summary.json')
        print('summarized', len(counts), 'files')


app.add_processor(GreetProcessor)
app.add_processor(SummarizeProcessor)

if __name__ == '__main__':
    app.run()
