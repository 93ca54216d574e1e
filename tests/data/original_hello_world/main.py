#!/usr/bin/env python3
# The seed's hello_world app written against the original Pairio SDK's API (pairio==0.5.9),
# as its apps were: its image runs unchanged on our bridges (tests/test_original_images.py).

import json

from pairio.sdk import App, BaseModel, Field, InputFile, OutputFile, ProcessorBase

IMAGE = 'localhost/pairio-original-hello-world:test'

app = App(
    app_name='hello_world',
    description='Hello world examples for Pairio'
)


class HelloWorld1Context(BaseModel):
    name: str = Field(description='Who to greet', default='world')


class HelloWorld1(ProcessorBase):
    name = 'hello_world_1'
    description = 'Prints a greeting to the console'
    label = 'Hello world 1'
    image = IMAGE
    executable = '/app/main.py'
    attributes = {}

    @staticmethod
    def run(context: HelloWorld1Context):
        print(f'Hello, {context.name}!')


class HelloWorld2Context(BaseModel):
    output: OutputFile = Field(description='Text file with the greeting')
    name: str = Field(description='Who to greet', default='world')


class HelloWorld2(ProcessorBase):
    name = 'hello_world_2'
    description = 'Writes a greeting to a text file'
    label = 'Hello world 2'
    image = IMAGE
    executable = '/app/main.py'
    attributes = {}

    @staticmethod
    def run(context: HelloWorld2Context):
        with open('output.txt', 'w') as f:
            f.write(f'Hello, {context.name}!')
        context.output.upload('output.txt')


class CountCharactersContext(BaseModel):
    input: InputFile = Field(description='The text file')
    output: OutputFile = Field(description='JSON with the count')
    include_whitespace: bool = Field(description='Count whitespace characters too', default=True)


class CountCharacters(ProcessorBase):
    name = 'count_characters'
    description = 'Counts the characters of a text file'
    label = 'Count characters'
    image = IMAGE
    executable = '/app/main.py'
    attributes = {}

    @staticmethod
    def run(context: CountCharactersContext):
        context.input.download('input.txt')
        with open('input.txt') as f:
            text = f.read()
        if not context.include_whitespace:
            text = ''.join(c for c in text if not c.isspace())
        print(f'{len(text)} characters')
        with open('output.json', 'w') as f:
            json.dump({'num_characters': len(text)}, f)
        context.output.upload('output.json')


class WaitContext(BaseModel):
    seconds: int = Field(description='How long to wait', default=120)


class Wait(ProcessorBase):
    name = 'wait'
    description = 'Waits, printing a line each second (for cancel tests)'
    label = 'Wait'
    image = IMAGE
    executable = '/app/main.py'
    attributes = {}

    @staticmethod
    def run(context: WaitContext):
        import time
        for i in range(context.seconds):
            print(f'waited {i} s')
            time.sleep(1)


app.add_processor(HelloWorld1)
app.add_processor(HelloWorld2)
app.add_processor(CountCharacters)
app.add_processor(Wait)

if __name__ == '__main__':
    app.run()
